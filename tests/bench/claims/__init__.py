"""Issue 16, item 5: the cost of a claim with a backlog of due tasks."""
