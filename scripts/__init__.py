"""Developer scripts: demo and benchmark slide builders."""
