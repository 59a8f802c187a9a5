"""The download and prepare steps: data sources, image decoding, splitting, the array
store and the batches read from it.
"""
