/**
 * The parts of `@aws-sdk/client-ec2` this provider uses, imported by name so
 * a bundler keeps only these commands (the whole client is about four times
 * larger and slower to load). `client.ts` imports this module lazily.
 */
export {
  CreateNetworkAclEntryCommand,
  CreateTagsCommand,
  DeleteNetworkAclEntryCommand,
  DeleteTagsCommand,
  DescribeNetworkAclsCommand,
  EC2Client,
  ReplaceNetworkAclEntryCommand,
} from '@aws-sdk/client-ec2';
