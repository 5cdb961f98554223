"""`cli.py label --serve`: the labelling page (a Flask app over a LabellingSession)."""
