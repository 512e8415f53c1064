"""Backdoor poisoning: triggers and poisoned data sets."""
