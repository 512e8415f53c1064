"""Backdoor detection from representations: spectral signatures, SPECTRE, activation clustering."""
