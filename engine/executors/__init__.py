"""What runs a step: SQL steps (first step, chaining, hand-over), HTTP steps, results,
new-transaction starts."""
