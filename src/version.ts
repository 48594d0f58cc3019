import pkg from '../package.json' with { type: 'json' };

export const VERSION: string = pkg.version;

/** `crowdsec-<service>-bouncer/v<x.y.z>`: the LAPI splits on '/' into bouncer type and version. */
export const USER_AGENT = `crowdsec-cloud-bouncer/v${VERSION}`;
