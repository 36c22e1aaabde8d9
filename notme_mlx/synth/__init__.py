"""notme_mlx.synth"""
