"""notme_mlx.bench"""
