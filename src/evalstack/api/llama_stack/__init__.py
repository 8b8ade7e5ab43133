"""Wire models and routers of the Llama Stack Eval, Scoring and Datasets APIs."""
