"""What the numbers say: which loss fits the data (advise), the summary's mergeable state, the report's pictures."""
