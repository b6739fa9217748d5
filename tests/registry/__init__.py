"""Device registry tests."""
