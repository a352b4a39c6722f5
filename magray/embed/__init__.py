"""Local embeddings: the llama.cpp embedder, the model registry and downloads, the embedding cache."""
