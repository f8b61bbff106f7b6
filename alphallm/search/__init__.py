"""eta-MCTS and step-level beam search (the paper's "Searching" part)."""
