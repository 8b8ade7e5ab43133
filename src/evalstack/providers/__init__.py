"""Eval providers: `local` drives the engine, `nvidia` talks to a remote NeMo Evaluator."""
