"""Attacks: white-box, black-box (oracle only), autoencoder and physical-world."""
