"""Wire models and routers of the NeMo Evaluator v1 API."""
