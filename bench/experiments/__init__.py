"""The benchmarks, one module each: (a)-(f), batch, fanout, growth, peers, sqs."""
