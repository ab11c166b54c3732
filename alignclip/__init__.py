"""AlignCLIP: training-free open-vocabulary segmentation of remote-sensing images."""

__version__ = "0.1.0"
