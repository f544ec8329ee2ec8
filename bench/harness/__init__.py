"""What every benchmark stands on: brokers, processes, load generators, apps and statistics."""
