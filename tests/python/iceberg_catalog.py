"""The dlog catalog of a test cluster, as pyiceberg opens it: the SQL
catalog (SQLite) with its files on the test's S3 server."""

from pyiceberg.catalog.sql import SqlCatalog


def open_catalog(uri, endpoint, access_key, secret_key):
    return SqlCatalog(
        "dlog",
        uri=uri,
        **{
            "s3.endpoint": endpoint,
            "s3.access-key-id": access_key,
            "s3.secret-access-key": secret_key,
            "s3.region": "us-east-1",
        },
    )
