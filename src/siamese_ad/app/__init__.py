"""Workflows that combine the layers, one per command: evaluate, predict, export, benchmark, demo,
synth-preview (train is `siamese_ad.training.trainer.train`). The CLI only parses and calls them."""
