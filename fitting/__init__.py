"""Calibration of rates to measured data (observations, loss, optimisers, uncertainty).

Not built yet: this package is reserved for the fitting layer and exports nothing.
"""
