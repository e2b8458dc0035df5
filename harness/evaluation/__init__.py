"""Evaluation: feature spaces, the metric math and registry, scoring with half-sample intervals, verdicts, and the
evaluator a run uses on its fixed latents."""
