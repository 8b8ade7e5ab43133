"""Academic benchmarks: prompting, answer extraction, data loading."""
