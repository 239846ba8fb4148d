"""``gramx serve``: a search service and a web page over an index (:func:`gramx.serve.app.create_app`)."""
