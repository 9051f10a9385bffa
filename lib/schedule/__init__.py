"""Running verifications on a schedule from one long-lived process: the trigger and the child runs."""
