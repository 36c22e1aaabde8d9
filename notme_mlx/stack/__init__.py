"""notme_mlx.stack"""
