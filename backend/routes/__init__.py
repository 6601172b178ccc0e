"""One router per concern: prediction, health and model facts, metrics."""
