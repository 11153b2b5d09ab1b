import { LOCAL_REDIS } from '../support/meterd.js';
import { defineEngineSuite } from './engine-suite.js';

defineEngineSuite('standalone Redis', async () => ({ redis: LOCAL_REDIS, stop: async () => {} }));
