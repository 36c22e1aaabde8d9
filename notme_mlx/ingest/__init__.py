"""notme_mlx.ingest"""
