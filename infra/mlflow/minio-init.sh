#!/bin/sh
# One-shot MinIO set-up, run by the `minio-init` service on every `docker compose up`
# (idempotent): the artifacts bucket, a policy limited to that bucket, and the access key
# MLflow uses, so the server never holds MinIO's root credentials.
set -eu
: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}"
: "${MLFLOW_S3_ACCESS_KEY:?}" "${MLFLOW_S3_SECRET_KEY:?}" "${MLFLOW_ARTIFACTS_BUCKET:?}"
POLICY=mlflow-artifacts-rw
export MC_CONFIG_DIR=/tmp/mc

mc alias set store http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "store/$MLFLOW_ARTIFACTS_BUCKET"

cat > /tmp/policy.json <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
      "Resource": ["arn:aws:s3:::$MLFLOW_ARTIFACTS_BUCKET"]
    },
    {
      "Effect": "Allow",
      "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                 "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
      "Resource": ["arn:aws:s3:::$MLFLOW_ARTIFACTS_BUCKET/*"]
    }
  ]
}
JSON
mc admin policy create store "$POLICY" /tmp/policy.json
# Adding an existing user updates its secret key, so rotating MLFLOW_S3_SECRET_KEY works.
mc admin user add store "$MLFLOW_S3_ACCESS_KEY" "$MLFLOW_S3_SECRET_KEY"
if ! mc admin user info store "$MLFLOW_S3_ACCESS_KEY" | grep -q "$POLICY"; then
    mc admin policy attach store "$POLICY" --user "$MLFLOW_S3_ACCESS_KEY"
fi
rm -f /tmp/policy.json
echo "bucket $MLFLOW_ARTIFACTS_BUCKET and access key for MLflow are ready"
