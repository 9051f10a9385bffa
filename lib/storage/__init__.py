"""Objects by key: the storage seam (local folder, S3), the one factory, the only code that imports boto3, and the download pool."""
