"""Data stages' library code: loading, validation, splitting, preprocessing, augmentation."""
