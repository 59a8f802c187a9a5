"""Shared leaves: files written atomically, downloads, devices, seeding, the command shell."""
