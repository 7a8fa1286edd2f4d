"""Config-driven sweeps: config -> jobs -> runner -> store -> compare -> report."""
