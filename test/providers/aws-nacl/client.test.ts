/**
 * How EC2 errors are classified. The errors are shaped as the SDK throws
 * them (name = the EC2 error code, `$metadata` with the HTTP status and
 * request id); the end-to-end runs against the fake EC2 server are in
 * `aws-nacl.test.ts`.
 */
import { describe, expect, it } from 'vitest';
import { FatalError, QuotaExceededError, RetryableError } from '../../../src/core/errors.js';
import { classifyEc2Error } from '../../../src/providers/aws-nacl/client.js';

function sdkError(code: string, message: string, status: number): Error {
  return Object.assign(new Error(message), { name: code, $metadata: { httpStatusCode: status, requestId: '5e1c8a4b-0000-4000-8000-000000000001' } });
}

describe('providers/aws-nacl/client: classifyEc2Error', () => {
  it('reads TagLimitExceeded as a quota error that names the 50-tag limit and the claims it could not write', () => {
    const cause = sdkError('TagLimitExceeded', 'The maximum number of Tags for a resource has been reached.', 400);

    const err = classifyEc2Error(cause, 'CreateTags acl-0123456789abcdef0 (claims of ingress rules 10, 11, and the apply lease of owner default)');

    expect(err).toBeInstanceOf(QuotaExceededError);
    expect(err).not.toBeInstanceOf(FatalError);
    expect((err as QuotaExceededError).code).toBe('TagLimitExceeded');
    expect(err.cause).toBe(cause);
    expect(err.message).toMatch(/^CreateTags acl-0123456789abcdef0 \(claims of ingress rules 10, 11, and the apply lease of owner default\): TagLimitExceeded: /);
    expect(err.message).toMatch(/already holds 50 tags, the EC2 limit per resource/);
    expect(err.message).toMatch(/no entry is written for their claims/);
  });

  it('keeps the other classes: entry quota, throttling, auth', () => {
    expect(classifyEc2Error(sdkError('NetworkAclEntryLimitExceeded', 'The maximum number of network acl entries has been reached.', 400), 'CreateNetworkAclEntry')).toBeInstanceOf(QuotaExceededError);
    expect(classifyEc2Error(sdkError('RequestLimitExceeded', 'Request limit exceeded.', 503), 'CreateTags')).toBeInstanceOf(RetryableError);
    const auth = classifyEc2Error(sdkError('UnauthorizedOperation', 'You are not authorized to perform this operation.', 403), 'CreateTags');
    expect(auth).toBeInstanceOf(FatalError);
    expect((auth as FatalError).code).toBe('UnauthorizedOperation');
  });
});
