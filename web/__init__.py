"""Pages and links for people: acknowledgement links now, the dashboard later."""
