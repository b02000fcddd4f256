"""Model artifacts the library writes itself: tiny random-weight models of the real architectures (:mod:`.tiny`)."""
