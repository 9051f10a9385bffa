"""The report model and every way out of the process: text, JSON, history, Sentry, email, logs, scrubbing, progress, status listing, cost."""
