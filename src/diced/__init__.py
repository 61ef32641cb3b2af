"""diced: versioned, chunked nD arrays with a numpy facade (Diced Is Cloud-Enabled DVID)."""

__version__ = "0.1.0"
