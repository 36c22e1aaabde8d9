"""notme_mlx.models"""
