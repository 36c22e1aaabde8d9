"""notme_mlx.detect"""
