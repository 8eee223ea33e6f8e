"""Help-center documents turned into searchable chunks: loaders, chunking, embeddings, store, retriever."""
