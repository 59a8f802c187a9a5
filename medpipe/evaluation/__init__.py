"""The evaluate step: clinician metrics, bootstrap intervals, calibration, Grad-CAM and the
report.
"""
