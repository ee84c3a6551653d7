"""`cappy serve`: Cappy as a reranking service behind the APIs existing clients speak
(Hugging Face text-embeddings-inference's and Cohere's), batched across requests:
`command` (flags, start-up, signals), `app` (the HTTP API), `batcher` (the scoring thread)."""
