/**
 * The state behind the fake EC2 server: network ACLs with their entries and
 * tags, and the limits EC2 enforces on them. Independent of the code under
 * test (its own small CIDR check), so a bug there is not mirrored here.
 *
 * Limits (Amazon VPC quotas; EC2 API reference; EC2 "Tag restrictions"):
 * - rule numbers 1..32766; the default `*` entries are 32767 (IPv4) and 32768 (IPv6) and cannot
 *   be written (Amazon VPC quotas: "rule number 32767 for IPv4 and 32768 for IPv6");
 * - entries per direction per family, default entries included: `quota` (20, 40 after a raise);
 * - at most 50 tags per resource, keys up to 128 and values up to 256 characters, no `aws:` prefix.
 */
import { isIPv4, isIPv6 } from 'node:net';

export class Ec2Error extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status = 400,
  ) {
    super(message);
    this.name = 'Ec2Error';
  }
}

export interface FakeEntry {
  ruleNumber: number;
  egress: boolean;
  protocol: string;
  ruleAction: 'allow' | 'deny';
  cidrBlock?: string | undefined;
  ipv6CidrBlock?: string | undefined;
  portRange?: { from: number; to: number } | undefined;
  icmpTypeCode?: { type: number; code: number } | undefined;
}

export interface FakeAssociation {
  /** `aclassoc-…` */
  id: string;
  subnetId: string;
}

export interface FakeAcl {
  id: string;
  vpcId: string;
  ownerId: string;
  isDefault: boolean;
  entries: FakeEntry[];
  tags: Map<string, string>;
  /** Subnets whose traffic the NACL filters; a subnet is associated with exactly one NACL. */
  associations: FakeAssociation[];
}

export interface EntryInput {
  networkAclId?: string | undefined;
  ruleNumber?: string | undefined;
  protocol?: string | undefined;
  ruleAction?: string | undefined;
  egress?: string | undefined;
  cidrBlock?: string | undefined;
  ipv6CidrBlock?: string | undefined;
  portFrom?: string | undefined;
  portTo?: string | undefined;
  icmpType?: string | undefined;
  icmpCode?: string | undefined;
}

/** Rule number of the default `*` entry for IPv4. */
export const DEFAULT_RULE = 32767;
/** Rule number of the default `*` entry for IPv6. */
export const DEFAULT_RULE_V6 = 32768;

export function isDefaultRule(ruleNumber: number): boolean {
  return ruleNumber === DEFAULT_RULE || ruleNumber === DEFAULT_RULE_V6;
}

/** Canonical CIDR (host bits cleared, IPv6 compressed) or undefined when invalid. */
export function canonicalCidr(value: string, family: 4 | 6): string | undefined {
  const slash = value.indexOf('/');
  if (slash < 0) return undefined;
  const addr = value.slice(0, slash);
  const prefixText = value.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (family === 4) {
    if (!isIPv4(addr) || prefix > 32) return undefined;
    const n = addr.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
    const size = 2 ** (32 - prefix);
    const start = n - (n % size);
    return `${[24, 16, 8, 0].map((s) => Math.floor(start / 2 ** s) % 256).join('.')}/${prefix}`;
  }
  if (!isIPv6(addr) || addr.includes('.') || prefix > 128) return undefined;
  const [head = '', tail = ''] = addr.includes('::') ? addr.split('::') : [addr, ''];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = addr.includes('::') ? [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t] : h;
  let v = groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
  const hostBits = BigInt(128 - prefix);
  v = (v >> hostBits) << hostBits;
  // The WHATWG URL parser prints IPv6 in RFC 5952 form.
  const hex = Array.from({ length: 8 }, (_, i) => ((v >> BigInt((7 - i) * 16)) & 0xffffn).toString(16)).join(':');
  return `${new URL(`http://[${hex}]/`).hostname.slice(1, -1)}/${prefix}`;
}

function familyOf(e: FakeEntry): 4 | 6 {
  return e.ipv6CidrBlock ? 6 : 4;
}

function required(name: string, v: string | undefined): string {
  if (v === undefined || v === '') throw new Ec2Error('MissingParameter', `The request must contain the parameter ${name}`);
  return v;
}

function int(name: string, v: string): number {
  if (!/^-?\d+$/.test(v)) throw new Ec2Error('InvalidParameterValue', `Invalid value '${v}' for ${name}. It must be an integer.`);
  return Number(v);
}

export class Ec2State {
  readonly acls = new Map<string, FakeAcl>();
  private nextId = 1;

  constructor(
    /** Entries per direction per family, default entries included. */
    public quota = 20,
    public maxTags = 50,
  ) {}

  newAclId(): string {
    return `acl-${(0x0a000000 + this.nextId++).toString(16).padStart(17, '0')}`;
  }

  newSubnetId(): string {
    return `subnet-${(0x0b000000 + this.nextId++).toString(16).padStart(17, '0')}`;
  }

  /** Associates a subnet with a NACL, moving it from the NACL it had (as ReplaceNetworkAclAssociation does). */
  associate(aclId: string, subnetId: string): void {
    const acl = this.acl(aclId);
    for (const other of this.acls.values()) other.associations = other.associations.filter((a) => a.subnetId !== subnetId);
    acl.associations.push({ id: `aclassoc-${(0x0c000000 + this.nextId++).toString(16).padStart(8, '0')}`, subnetId });
  }

  /** Removes a subnet's association (in EC2 the subnet falls back to the VPC's default NACL). */
  disassociate(aclId: string, subnetId: string): void {
    const acl = this.acl(aclId);
    acl.associations = acl.associations.filter((a) => a.subnetId !== subnetId);
  }

  acl(id: string | undefined): FakeAcl {
    const acl = id ? this.acls.get(id) : undefined;
    if (!acl) throw new Ec2Error('InvalidNetworkAclID.NotFound', `The networkAcl ID '${id ?? ''}' does not exist`);
    return acl;
  }

  /** Validates and builds an entry the way Create/ReplaceNetworkAclEntry do. */
  private entryFrom(p: EntryInput): { acl: FakeAcl; entry: FakeEntry } {
    const acl = this.acl(required('NetworkAclId', p.networkAclId));
    const ruleNumber = int('RuleNumber', required('RuleNumber', p.ruleNumber));
    if (ruleNumber < 1 || ruleNumber > 32766) {
      throw new Ec2Error('InvalidParameterValue', `Value (${ruleNumber}) for parameter ruleNumber is invalid. Rule number must be between 1 and 32766.`);
    }
    const protocol = required('Protocol', p.protocol);
    if (protocol !== '-1' && !(/^\d{1,3}$/.test(protocol) && Number(protocol) <= 255)) {
      throw new Ec2Error('InvalidParameterValue', `Invalid value '${protocol}' for protocol. Must be -1 or a protocol number 0-255.`);
    }
    const action = required('RuleAction', p.ruleAction);
    if (action !== 'allow' && action !== 'deny') throw new Ec2Error('InvalidParameterValue', `Invalid value '${action}' for ruleAction. Must be allow or deny.`);
    const egressText = required('Egress', p.egress);
    if (egressText !== 'true' && egressText !== 'false') throw new Ec2Error('InvalidParameterValue', `Invalid value '${egressText}' for egress.`);
    if (p.cidrBlock && p.ipv6CidrBlock) throw new Ec2Error('InvalidParameterCombination', 'Specify either a CIDR block or an IPv6 CIDR block, not both.');
    if (!p.cidrBlock && !p.ipv6CidrBlock) throw new Ec2Error('MissingParameter', 'The request must contain the parameter cidrBlock or ipv6CidrBlock');
    const cidr = p.cidrBlock ? canonicalCidr(p.cidrBlock, 4) : canonicalCidr(p.ipv6CidrBlock!, 6);
    if (!cidr) throw new Ec2Error('InvalidParameterValue', `Value (${p.cidrBlock ?? p.ipv6CidrBlock}) for parameter ${p.cidrBlock ? 'cidrBlock' : 'ipv6CidrBlock'} is invalid. This is not a valid CIDR block.`);
    const entry: FakeEntry = {
      ruleNumber,
      egress: egressText === 'true',
      protocol,
      ruleAction: action,
      ...(p.cidrBlock ? { cidrBlock: cidr } : { ipv6CidrBlock: cidr }),
    };
    if (protocol === '6' || protocol === '17') {
      entry.portRange = { from: int('PortRange.From', required('PortRange.From', p.portFrom)), to: int('PortRange.To', required('PortRange.To', p.portTo)) };
    }
    if (protocol === '1' || protocol === '58') {
      entry.icmpTypeCode = { type: int('Icmp.Type', required('Icmp.Type', p.icmpType)), code: int('Icmp.Code', required('Icmp.Code', p.icmpCode)) };
    }
    return { acl, entry };
  }

  private find(acl: FakeAcl, ruleNumber: number, egress: boolean): number {
    return acl.entries.findIndex((e) => e.ruleNumber === ruleNumber && e.egress === egress);
  }

  private count(acl: FakeAcl, egress: boolean, family: 4 | 6, except?: FakeEntry): number {
    return acl.entries.filter((e) => e !== except && e.egress === egress && familyOf(e) === family).length;
  }

  createEntry(p: EntryInput): void {
    const { acl, entry } = this.entryFrom(p);
    if (this.find(acl, entry.ruleNumber, entry.egress) >= 0) {
      throw new Ec2Error('NetworkAclEntryAlreadyExists', `The network acl entry identified by ${entry.ruleNumber} already exists.`);
    }
    if (this.count(acl, entry.egress, familyOf(entry)) >= this.quota) {
      throw new Ec2Error('NetworkAclEntryLimitExceeded', 'The maximum number of network acl entries has been reached.');
    }
    acl.entries.push(entry);
  }

  replaceEntry(p: EntryInput): void {
    const { acl, entry } = this.entryFrom(p);
    const i = this.find(acl, entry.ruleNumber, entry.egress);
    if (i < 0) throw new Ec2Error('InvalidNetworkAclEntry.NotFound', `The network acl entry identified by ${entry.ruleNumber} does not exist.`);
    const old = acl.entries[i]!;
    if (familyOf(old) !== familyOf(entry) && this.count(acl, entry.egress, familyOf(entry), old) >= this.quota) {
      throw new Ec2Error('NetworkAclEntryLimitExceeded', 'The maximum number of network acl entries has been reached.');
    }
    acl.entries[i] = entry;
  }

  deleteEntry(p: { networkAclId?: string | undefined; ruleNumber?: string | undefined; egress?: string | undefined }): void {
    const acl = this.acl(required('NetworkAclId', p.networkAclId));
    const ruleNumber = int('RuleNumber', required('RuleNumber', p.ruleNumber));
    if (ruleNumber < 1 || ruleNumber > 32766) {
      throw new Ec2Error('InvalidParameterValue', `Value (${ruleNumber}) for parameter ruleNumber is invalid. Rule number must be between 1 and 32766.`);
    }
    const egress = required('Egress', p.egress) === 'true';
    const i = this.find(acl, ruleNumber, egress);
    if (i < 0) throw new Ec2Error('InvalidNetworkAclEntry.NotFound', `The network acl entry identified by ${ruleNumber} does not exist.`);
    acl.entries.splice(i, 1);
  }

  private resources(ids: string[]): FakeAcl[] {
    if (ids.length === 0) throw new Ec2Error('MissingParameter', 'The request must contain the parameter resourceIdSet');
    return ids.map((id) => {
      if (!id.startsWith('acl-')) throw new Ec2Error('InvalidID', `The ID '${id}' is not valid`);
      return this.acl(id);
    });
  }

  /** Validates every tag and the 50-tag limit first, then applies all or nothing. */
  createTags(ids: string[], tags: Array<{ key: string; value: string }>): void {
    const acls = this.resources(ids);
    if (tags.length === 0) throw new Ec2Error('MissingParameter', 'The request must contain the parameter tagSet');
    for (const t of tags) {
      if (t.key.length === 0) throw new Ec2Error('InvalidParameterValue', 'Tag key must not be empty');
      if (t.key.length > 128) throw new Ec2Error('InvalidParameterValue', `Tag key exceeds the maximum length of 128 characters`);
      if (t.value.length > 256) throw new Ec2Error('InvalidParameterValue', `Tag value exceeds the maximum length of 256 characters`);
      if (t.key.toLowerCase().startsWith('aws:')) throw new Ec2Error('InvalidParameterValue', `Tag keys starting with 'aws:' are reserved for internal use`);
    }
    for (const acl of acls) {
      const keys = new Set(acl.tags.keys());
      for (const t of tags) keys.add(t.key);
      if (keys.size > this.maxTags) throw new Ec2Error('TagLimitExceeded', `The maximum number of Tags for a resource has been reached.`);
    }
    for (const acl of acls) for (const t of tags) acl.tags.set(t.key, t.value);
  }

  /** A tag given with a value is deleted only when the value matches; no tags at all deletes every tag. */
  deleteTags(ids: string[], tags: Array<{ key: string; value?: string | undefined }>): void {
    const acls = this.resources(ids);
    for (const acl of acls) {
      if (tags.length === 0) acl.tags.clear();
      for (const t of tags) if (t.value === undefined || acl.tags.get(t.key) === t.value) acl.tags.delete(t.key);
    }
  }
}
