"""Recovery objectives: how far back a restore can reach, how old the newest point is, how long a restore takes, and drills of older restore points."""
