"""fercore: train, evaluate and look inside facial-expression CNNs on FER2013. No Streamlit here."""

__version__ = "0.1.0"
