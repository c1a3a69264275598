"""`remedium demo` and `remedium up --demo`: the whole loop on the embedded stack and the sandboxes."""
