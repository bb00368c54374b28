"""Result backends and the result handles (``AsyncResult``) that read them."""
