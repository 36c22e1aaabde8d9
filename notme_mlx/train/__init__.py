"""notme_mlx.train"""
