"""Native and compiled decode steps, and the huge-page placement of the weights they stream."""
