"""Other tools' formats and interfaces: scikit-learn estimators and SAELens files."""
