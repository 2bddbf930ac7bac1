// The ARM sandbox for Microsoft.MachineLearningServices: see arm-sandbox.ts for the behaviour and README.md for
// how production code reaches it (ARM endpoint, credential scope, datastore blob URL).
export {
  ARM_SCOPE,
  type ArmAuthorizer,
  type ArmFaults,
  type ArmRequestRecord,
  type ArmSandbox,
  type ArmSandboxOptions,
  type ArmTimings,
  type DeploymentSnapshot,
  type EndpointSnapshot,
  type ModelLoader,
  type ProvisioningFailure,
  type RequestMatch,
  startArmSandbox,
} from "./arm-sandbox.ts";
export {
  AZURITE_ACCOUNT,
  AZURITE_ACCOUNT_KEY,
  type Azurite,
  type AzuriteOptions,
  startAzurite,
} from "./azurite.ts";
export { DEFAULT_DATASTORE, type SandboxModelVersion } from "./models.ts";
export {
  createScoringHost,
  MIRRORED_HEADER,
  type ScoringEndpointState,
  type ScoringHost,
  type ScoringHostOptions,
} from "./scoring-host.ts";
export {
  ARM_API_VERSION,
  type ArmSpec,
  loadArmSpec,
  type SpecOperation,
  type SpecViolation,
} from "./spec.ts";
