"""The dashboard's shared parts: settings, session-state keys, the sidebar, cached loaders and error display.

Pages stay thin: they read widgets, call one or two loaders here (which call fercore), and lay out the result.
"""
